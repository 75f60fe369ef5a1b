"""Release: staging -> shards, manifest, index, attribution."""
