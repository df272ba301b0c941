"""One module per ``mvs`` subcommand (see :mod:`mvs.cli`)."""
