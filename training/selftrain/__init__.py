"""Self-training with dual-stage pseudo-label filtering (issue #6).

    stats    labelled CT -> median spacing + per-organ relative-volume statistics (stats.json)
    predict  unlabelled target scans -> one label map per model (best, second-best, extra ensemble members),
             sharded (--shard K/N) and resumable
    filter   stage 1 (sample-wise: class number, relative volume, top-k Dice between the two best checkpoints)
             -> stage 2 (voxel-wise majority vote of all N models) -> training-ready folder + manifest + Table 4
    table    merge the Table-4 files of several target sets into one table

See README.md in this folder for the file formats and the design decisions.
"""
