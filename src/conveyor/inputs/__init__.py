"""Input kinds: how a submitted input becomes stored item bytes (with caps, validated up front)."""
