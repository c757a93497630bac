-- wrk script: the headers a browser sends, for measuring a realistic request:
--   WRK_ARGS="-s $PWD/bench/browser_headers.lua" bench/instructions
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-US,en;q=0.5"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["Referer"] = "http://localhost/previous/page"
wrk.headers["Cookie"] = "session=3f9a1c2e7b6d4a8f; theme=dark"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
