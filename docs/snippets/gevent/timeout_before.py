import gevent

cleaned = []


def slow():
    try:
        gevent.sleep(10)
        return "finished"
    finally:
        cleaned.append("slow")


def main():
    try:
        with gevent.Timeout(0.1):
            return slow()
    except gevent.Timeout:
        return "timed out"


if __name__ == "__main__":
    print(main(), cleaned)
