"""Data stage: manifests, image reading, the phantom dataset, tasks, splits and shards."""
