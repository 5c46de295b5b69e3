# Every cell's records -> tidy tables -> figures (with captions for --report).

rule merge:
    input:
        dag.grid_markers(STUDY, SELECT),
        dag.set_aside_markers(SET_ASIDE),
    output:
        expand(f"{ROOT}/tables/{{table}}.{{ext}}", table=dag.TABLES, ext=("parquet", "csv")),
        report(f"{ROOT}/tables/compute.html", caption="../report/compute.rst", category="Compute"),
    log:
        f"{ROOT}/logs/merge.log",
    shell:
        "{PRUNEGEN} merge {STUDY_ARGS} > {log} 2>&1"


rule figures:
    input:
        rules.merge.output,
    output:
        [report(f"{ROOT}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")
         for name in dag.FIGURES],
        expand(f"{ROOT}/figures/{{name}}.pdf", name=dag.FIGURES),
    log:
        f"{ROOT}/logs/figures.log",
    shell:
        "{PRUNEGEN} figures {STUDY_ARGS} > {log} 2>&1"
