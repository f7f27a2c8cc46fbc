from broker.cli.commands import main

main()
