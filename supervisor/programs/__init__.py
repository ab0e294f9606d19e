"""The project's other programs: configuration, dependencies, Procfile, running them."""
