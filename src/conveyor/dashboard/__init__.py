"""``conveyor dashboard``: a read-only web page of the ledger and the queue, live."""

from __future__ import annotations

from conveyor.dashboard.app import create_app
from conveyor.dashboard.data import DashboardData

__all__ = ["DashboardData", "create_app"]
