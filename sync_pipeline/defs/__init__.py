"""The project's definitions as ``dg`` sees them: one folder per component instance, each with its
``defs.yaml``. ``sqlite_pg_sync/`` is the project's own sync (the environment variables' one)."""
