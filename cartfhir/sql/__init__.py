"""DDL for the tables shared by every stage (schema ``meta``)."""
