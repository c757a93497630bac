"""A minimal one-file Django project: a view, a form POST with CSRF, a redirect
and a streaming response."""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="ferricorn-tests-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
    INSTALLED_APPS=[],
    TEMPLATES=[],
    USE_TZ=True,
)
django.setup()

from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.urls import path  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402


def hello(request):
    return HttpResponse(f"django ok {request.method} {request.path}")


def form(request):
    if request.method == "POST":
        return HttpResponse(f"posted {request.POST['name']}")
    return HttpResponse(get_token(request))


def go(request):
    return HttpResponseRedirect("/hello/")


def stream(request):
    return StreamingHttpResponse(f"chunk {i}\n" for i in range(3))


urlpatterns = [path("hello/", hello), path("form/", form), path("go/", go), path("stream/", stream)]

application = get_wsgi_application()
