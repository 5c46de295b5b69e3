"""Records -> tables -> verdicts, figures, pages. `scan` says where every cell stands,
`merge` turns complete cells' records into the study's tables, `tables` derives the
statistics from them and `compute` what the jobs cost; `verdicts/` judges the paper's
claims (pure functions of the tables), `figures/` draws them (one registry), `report/`
writes the pages. Torch-free: reads what prunegen.records names, never the engine."""
