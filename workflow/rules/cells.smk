# One job per cell; one rule per benchmark (cell_<benchmark>, e.g. cell_mnist_lenet300),
# so that a job's threads, memory and GPUs are the study's plain numbers rather than
# callables Snakemake evaluates once per job. A chain arm's level k reads level k-1 (and
# random reads imp at level k); Snakemake orders them through the parents' cell.json.

for cells in dag.cell_rules(STUDY):

    rule:
        name:
            cells.name
        wildcard_constraints:
            benchmark=cells.benchmark_regex,
        input:
            cells.inputs,
        output:
            **dag.cell_outputs(ROOT),
        params:
            # a changed hyperparameter changes the hash: Snakemake's params trigger re-runs the cell
            cell_hash=cells.cell_hash,
        threads: cells.threads
        resources:
            mem_mb=cells.mem_mb,
            runtime=cells.runtime,
            gpus=cells.gpus,
        log:
            f"{ROOT}/logs/cells/{dag.CELL_PATTERN}.log",
        benchmark:
            f"{ROOT}/benchmarks/cells/{dag.CELL_PATTERN}.tsv"
        shell:
            "OMP_NUM_THREADS={threads} {PRUNEGEN} run-cell {STUDY_ARGS} --benchmark {wildcards.benchmark}"
            " --arm {wildcards.arm} --level {wildcards.level} --noise {wildcards.noise} --seed {wildcards.seed}"
            " > {log} 2>&1"
