"""Cross-client aggregates on the receiver: mean, min, max, count and weighted mean per metric
and round (or step) over the clients of a job, written to the job's parent run."""
