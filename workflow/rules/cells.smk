# One job per cell. A chain arm's level k reads level k-1 (and random reads imp at
# level k); Snakemake orders them through the parents' cell.json markers.

rule cell:
    input:
        lambda w: dag.parent_inputs(STUDY, w),
        # dry run: a corrupt cell waits for its set_aside job (see the Snakefile)
        lambda w: dag.set_aside_inputs(SET_ASIDE, STUDY, w),
    output:
        **dag.cell_outputs(ROOT),
    params:
        # a changed hyperparameter changes the hash: Snakemake's params trigger re-runs the cell
        cell_hash=lambda w: dag.cell(STUDY, w).hash,
    threads: lambda w: dag.resources(STUDY, w)["cpus"]
    resources:
        mem_mb=lambda w: dag.resources(STUDY, w)["mem_mb"],
        runtime=lambda w: dag.resources(STUDY, w)["runtime_min"],
        gpus=lambda w: dag.resources(STUDY, w)["gpus"],
        # a data-parallel cell: nodes x tasks ranks, one SLURM job of that many tasks
        nodes=lambda w: dag.resources(STUDY, w)["nodes"],
        tasks=lambda w: dag.resources(STUDY, w)["tasks"],
    log:
        f"{ROOT}/logs/cells/{dag.CELL_PATTERN}.log",
    benchmark:
        f"{ROOT}/benchmarks/cells/{dag.CELL_PATTERN}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} {PRUNEGEN} run-cell {STUDY_ARGS} --benchmark {wildcards.benchmark}"
        " --arm {wildcards.arm} --level {wildcards.level} --noise {wildcards.noise} --seed {wildcards.seed}"
        " > {log} 2>&1"


# In a dry run, the rename of a corrupt cell's cell.json to cell.json.corrupt, which a
# real run does as it starts (see the Snakefile); should it run, it does the same.
rule set_aside:
    output:
        f"{ROOT}/cells/{dag.CELL_PATTERN}/{layout.SET_ASIDE}",
    localrule: True
    run:
        dag.set_aside(dag.cell(STUDY, wildcards).dir)
