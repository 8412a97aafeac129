"""Training the `bundled` dual encoder: cached frozen-tower features, projection heads, evaluation."""
