"""Configuration: supervisor.toml, the environment schema, .env, resolved settings."""
