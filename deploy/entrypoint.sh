#!/bin/sh
# The image's entry point: the arguments are a `fillframe` command (serve, worker, migrate, keys ...).
# `serve` listens on every interface unless told otherwise: inside a container, the embedded
# default 127.0.0.1 cannot be reached from outside it.
set -e
if [ "$#" -eq 0 ]; then set -- serve; fi
if [ "$1" = fillframe ]; then shift; fi
if [ "$1" = serve ]; then
  case " $* " in
    *" --host "* | *" --host="*) ;;
    *) shift; set -- serve --host 0.0.0.0 "$@" ;;
  esac
fi
exec fillframe "$@"
