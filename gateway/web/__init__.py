"""The gateway on the LAN over HTTP: the duty desk (值班台) for people and its JSON API for
machines — Starlette served by uvicorn on the gateway's own event loop (server), sign-in and
roles (auth), what the board shows (board), the live board's shared renders (live), the app
itself (console), the site pages — households, buildings, devices, history, visits — (pages,
what they show: views, a device's health: health); the change counter the runtime bumps
(changes) needs none of it. See docs/console.md."""
