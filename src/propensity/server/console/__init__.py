"""The web console: pages for the people who act on scores (overview, targeting, models, monitoring,
experiments, customer lookup), served by ``propensity serve`` at ``/console`` or by ``propensity console``.

Routes and pages only (:mod:`~propensity.server.console.routes`); the numbers come from the packages below.
Charts use uPlot (vendored in ``assets/``, MIT licence in ``assets/uPlot.LICENSE.txt``).
"""

from propensity.server.console.app import create_console_app
from propensity.server.console.routes import ENDPOINTS, PUBLIC, ConsoleState

__all__ = ["ENDPOINTS", "PUBLIC", "ConsoleState", "create_console_app"]
