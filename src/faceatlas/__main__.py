from faceatlas.cli.main import main

main()
