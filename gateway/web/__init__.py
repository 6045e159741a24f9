"""The gateway on the LAN over HTTP: the duty desk (值班台) for people and its JSON API for
machines — Starlette served by uvicorn on the gateway's own event loop (server), sign-in and
roles (auth), what the board shows (board), the app itself (console). See docs/console.md."""
