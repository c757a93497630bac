"""App factories, as Flask's create_app() pattern uses them."""


def create_app(greeting="factory", times=1):
    body = (greeting * times).encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"module default"]


not_callable = 42
