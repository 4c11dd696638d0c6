from fillframe.cli import main

main()
