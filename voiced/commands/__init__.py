"""The ``voiced`` command line: one click command module per subcommand, loaded lazily.

Commands sit on top of every room and wire them together for one job (transcribe, listen, run).
"""
