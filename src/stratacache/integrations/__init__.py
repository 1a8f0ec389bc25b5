"""Framework adapters. Each subpackage imports its framework; this package imports nothing."""

from __future__ import annotations
