"""Configuration: the topology file and the types every role reads."""
