"""The composition root: the ``parley`` command and the wiring of adapters, the chat service and
a local engine. The only package that imports ``adapters``, ``bot`` and ``engine`` together;
``bot`` imports neither of the others (it knows the engine only by its HTTP contract)."""
