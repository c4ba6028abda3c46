"""The doors to the engine: command line, REST API, Ray scan and the dashboard's library side."""
