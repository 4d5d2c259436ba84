"""What each console page shows: one module a page, each an async `data` function."""

from starter.console.views import approval, canary, create, dora, freezes, service, services

ALL_PAGES = [services.PAGE, service.PAGE, approval.PAGE, canary.PAGE, create.PAGE, freezes.PAGE,
             dora.PAGE]
