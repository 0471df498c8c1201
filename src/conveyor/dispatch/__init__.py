"""How chunks reach workers: the Dispatcher contract and its local implementation."""
