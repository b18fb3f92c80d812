"""Models: loading (hub, file, random), identity without torch, the runtime model, the embedded models."""
