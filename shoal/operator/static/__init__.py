"""Status page assets (HTML, CSS, JS), shipped as package data."""
