"""rnnscope's web layer: settings, model registry, JSON API, HTML pages, share store, CLI."""
