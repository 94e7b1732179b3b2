"""OpenLineage run events (START, COMPLETE, FAIL, ABORT) of every run, with its input and output datasets
and their schema facets, emitted from the monitor's fold (``tracker`` states the guarantee). Off unless an
OpenLineage transport is configured."""
