"""Click commands, one module per ``voiced`` subcommand (imported lazily by voiced.cli)."""
