"""Generated views (GenView): offline image variations of a release's samples, written as a derived
release, for contrastive recipes that draw one of their two views from the variation."""
