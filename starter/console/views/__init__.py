"""What each console page shows: one module a page, each an async `data` function."""

from starter.console.views import approval, create, service, services

ALL_PAGES = [services.PAGE, service.PAGE, approval.PAGE, create.PAGE]
