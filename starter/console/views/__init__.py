"""What each console page shows: one module a page, each an async `data` function."""

from starter.console.views import canary, dora, freezes, services

ALL_PAGES = [services.PAGE, canary.PAGE, freezes.PAGE, dora.PAGE]
