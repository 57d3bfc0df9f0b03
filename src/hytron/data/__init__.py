"""Data curation: TinyWeb, FactWorld, readers and writers, filters, dedup, quality buckets, PII, decontamination,
rephrasing.

Layer 1: imports only `hytron.config`, the standard library and third-party libraries, never torch.
Entry points: `hytron.data.tinyweb.generate`, `hytron.data.factworld.generate` (the data claim's crawl),
`hytron.data.pipeline.curate`, `hytron.data.pipeline.explain`.
"""
