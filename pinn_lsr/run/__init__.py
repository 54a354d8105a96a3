"""The command line and the run behind it: cli -> config -> pipeline -> stages."""
