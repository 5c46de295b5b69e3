"""The on-disk contract between the engine, which writes a cell's records, and the
analysis, which reads them: where every file lives (`layout`), the Parquet schemas
(`schemas`), atomic writes and verified reads (`store`), one writer per cell (`lock`),
and which engine and machine computed a cell (`provenance`). Torch-free."""
