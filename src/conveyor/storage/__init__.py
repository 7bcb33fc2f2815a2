"""The classic storage API (Local, S3, GCS, Azure, GitHub, ...) over `conveyor.sources`."""
