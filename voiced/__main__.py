from voiced.cli import main

main()
