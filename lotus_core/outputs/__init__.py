"""Depth for other tools: levels, colour maps, files, metric distances, geometry and point clouds."""
