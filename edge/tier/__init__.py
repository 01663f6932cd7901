"""The regional shared cache tier (Redis) behind the edge's in-process store."""
