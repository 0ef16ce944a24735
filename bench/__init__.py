"""buildfarm's benchmarks (`make bench`, i.e. `python -m bench [--quick] [--only NAME ...]`).

Every figure is printed as a ratio to a baseline measured in the same run, with its target:

    first-line   submit -> first line of the build's own output, vs a bare `docker run --rm IMAGE true`
    throughput   trivial builds end to end (builds/min), vs the same number of bare `docker run`s in a loop
    core         the pure scheduler core (`buildfarm.placement.plan`): decisions/s, vs the 20,000/s target
    log          log ingest of one build printing 1 GB (MB/s, the farm's RSS, nothing lost), vs the same
                 command writing to /dev/null in a bare `docker run`
    mesos-running, mesos-offers   extras (informational): the Mesos backend against its double

Modules: common (results, baselines, helpers), core, builds (first-line, throughput), logingest,
mesos. Results go to bench/results/latest.json (gitignored); a Markdown table for the README is
printed at the end.
"""
