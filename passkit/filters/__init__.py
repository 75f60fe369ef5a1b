"""Filters that decide which fetched images a release keeps: people (detector ensemble), dedup, quality.

Submodules are imported on use (`from passkit.filters.people import PeopleFilter`): the people filter
loads torch, OpenCV and ONNX Runtime, which the other filters do not need.
"""
