"""The stage a trial's measurement reached (``sweep.staging`` decides it): stored with the
measurement, as these strings."""

FULL = "full"  # every document of every task, and the perplexity task
TASKS = "tasks"  # every document of every task (Sr exact), no perplexity: dominated when exact
SAMPLE = "sample"  # stopped after the sample: task scores estimated, no perplexity
STOPPED = {SAMPLE: "stopped after its sample", TASKS: "stopped before its perplexity"}
