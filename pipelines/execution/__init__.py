"""How units of work run: the units, the executors (sequential, a local pool, Ray), the
unit cache and the device."""
