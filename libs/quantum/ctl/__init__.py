"""Operating the fleet: the ``quantumctl`` command line and the local process supervisor."""
