# Served by: gunicorn -k gevent wsgi_before:app
import time


def app(environ, start_response):
    time.sleep(0.2)  # green: the gevent worker called monkey.patch_all()
    body = b"slept"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
