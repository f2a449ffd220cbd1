"""Traffic: predicted images kept unlabelled per stream, in windows, joined to late labels.

``capture`` keeps a share of each prediction call's images with what was served;
``windows`` batches them (by size and by age) apart from the labelled windows; ``join``
records a late label on the traffic row of its id inside ingest's transaction; ``served``
reports the accuracy of what production was served and the label delay; ``retention``
bounds traffic by age and by rows.
"""
