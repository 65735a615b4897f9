"""Engine adapters: the same case run by our engine, by vLLM or by transformers (``registry.adapter_for``)."""
